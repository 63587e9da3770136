from adjust.cli import main

main()
