from mailhost.cli import main

main()
