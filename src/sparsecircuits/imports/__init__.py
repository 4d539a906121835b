"""Imports: models trained elsewhere, converted into ordinary run folders.

`hf` converts a Hugging Face GPT-2-family model (hf.py), `openai_sparse` the weight-sparse
models OpenAI released with "Weight-sparse transformers have interpretable circuits"
(openai_sparse.py); both write through run_folder.py, so `sparsecircuits.load`, `tasks eval`,
`prune` and `explain` open the result like a run trained here. Imports `sparsecircuits.data`,
`sparsecircuits.model`, `sparsecircuits.loading` and the leaf modules only.
"""
