from gatekeeper.channels.cli.main import main

main()
