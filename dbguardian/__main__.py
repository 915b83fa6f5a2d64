from dbguardian.entry import main

main()
