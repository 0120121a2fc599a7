"""Data: the parameter-golf shard format, tokenizer training, dataset building and fetching."""
