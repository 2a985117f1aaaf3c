"""Workflows that train and score models for a purpose: evaluate, cv, compare, ship, demo."""
