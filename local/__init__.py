"""The embedded local stack: API Gateway emulation, moto, and an upstream simulator."""
