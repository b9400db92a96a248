from ovdoc.cli import main

main()
