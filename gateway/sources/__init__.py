"""Controller sources: SHDR adapters (with their Devices.xml model and assets)."""
