from emlab.cli import main

main()
