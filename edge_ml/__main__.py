from edge_ml.cli import main

main()
