"""Fault-drill harness: a simulated factory (native i5 machines and SHDR adapters behind the
gateway), Mosquitto, two ingest workers and TimescaleDB as real processes, faults injected one by
one, and the database compared with the simulators' ground truth."""
