"""The live call table: enrichment from reference data, stable ids and rows, the durable `activecalls` copy."""
