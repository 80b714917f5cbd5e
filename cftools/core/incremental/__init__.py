"""cf-merge add: new points into an existing clustering, working only where they reach."""
