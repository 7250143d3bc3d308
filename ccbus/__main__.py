from ccbus.cli.app import main

main()
