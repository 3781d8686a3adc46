"""The pure core: AMI messages in, call-table changes out. No I/O, no asyncio."""
