from csm.client.cli import main

main()
