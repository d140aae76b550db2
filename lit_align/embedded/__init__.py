"""The embedded default: a synthetic review-continuation task that runs fully offline.

After the controlled-sentiment experiment of the DPO paper (App. C.1): prompts open a short movie
review, completions continue it, and a lexicon scores the sentiment (the programmatic ground-truth
reward in ``lit_align.rewards.sentiment``). A word-level tokenizer and a tiny Llama-family model are
built locally, so nothing is downloaded.
"""
