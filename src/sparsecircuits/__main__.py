from sparsecircuits.cli import main

main()
