"""Host specs and the Photon kickstarts built from them. Pure: no sockets, clocks or writes."""
