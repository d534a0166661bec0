"""Sequence models and control flow: LSTM / RNN ops, WHILE and IF over their subgraphs."""

from __future__ import annotations
