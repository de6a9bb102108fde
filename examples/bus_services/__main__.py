"""``python -m examples.bus_services``: run the bus example against the local brokers."""

from examples.bus_services.run import main

main()
