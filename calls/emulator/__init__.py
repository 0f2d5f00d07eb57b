"""The built-in Twilio emulator: an offline stand-in for the carrier and the person who answers."""
