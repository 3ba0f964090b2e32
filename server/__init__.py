"""photonkick.server"""
