from langplay.cli import main

main()
