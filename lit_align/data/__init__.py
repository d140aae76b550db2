"""Typed batches, tokenisation, dataset loading and DataModules."""
