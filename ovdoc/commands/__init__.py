"""One module per CLI verb; each holds only argument parsing and output, the work lives in ovdoc.*."""
