"""The Asterisk edge: AMI framing (with its optional C part), the protocol panoramisk drives, one session per server.

Knows nothing of the tracker: the composition root hands the session the events and header keys to keep.
"""
