"""photonkick.pxe"""
