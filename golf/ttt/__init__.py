"""Test-time training strategies (registry filled by golf.ttt.strategies)."""

# The strategy names of the contract; golf.ttt.strategies maps each to its implementation.
STRATEGIES = ("none", "prequant_val", "lora_single_pass", "train_slice", "score_first", "lora_score_first")
