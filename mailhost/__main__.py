from mailhost.cli.app import main

main()
