from storegate.cli import main

main()
