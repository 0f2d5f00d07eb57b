"""Speech and language engines behind small interfaces (see ``base``)."""
