"""qc-tail: follow QuantConnect live-algorithm logs like tail -f."""

__version__ = "0.1.0"
