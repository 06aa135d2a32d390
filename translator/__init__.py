"""Korean–English phrase translation toolkit: a bidirectional RNN encoder–attention decoder."""

__version__ = "0.1.0"
