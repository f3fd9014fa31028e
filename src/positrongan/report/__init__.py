"""Tables and figures of the evaluation: metrics.csv -> table.md, and the sample grid."""
