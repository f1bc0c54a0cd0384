"""The domain: plain functions over a Runtime, no Flask."""
