"""Model configs registered with OpenCLIP and frozen models read from local weights."""
