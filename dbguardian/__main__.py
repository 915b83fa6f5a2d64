from dbguardian.cli import main

main()
