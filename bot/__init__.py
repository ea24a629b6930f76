"""Conversations with customers and the channels they arrive on."""
