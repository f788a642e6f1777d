from picosparse.cli import main

main()
