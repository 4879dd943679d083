"""lantern_batch: distil an LLM's judgement of job-person fit into small models, and precompute
fit labels and explanations for millions of member-job pairs in batch (Ray Data, Ray Train, vLLM).
"""

__version__ = "0.1.0"
