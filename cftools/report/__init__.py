"""Looking at results: the HTML gallery of clusters (gallery) and the PNG plots (plots)."""
