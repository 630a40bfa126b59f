"""Reports that turn a sweep's summary.csv into figures and estimates, one module per experiment."""
