"""One module per ``medseg`` command: each turns parsed arguments into a library call and prints the
result. No command imports another."""
