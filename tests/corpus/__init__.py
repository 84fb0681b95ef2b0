"""Realistic email messages built at test time (see make_corpus)."""
