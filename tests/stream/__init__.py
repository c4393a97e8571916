"""Shipping to NATS JetStream and back, on real 3-node clusters."""
