from csm.daemon.main import main

main()
