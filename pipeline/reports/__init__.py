"""Self-contained HTML reports of a run (no network: plots are inline PNG, styles inline): the
data statistics, the anomalies and the run page."""
