from firepipe.cli.app import main

main()
