"""The call REST API (Django REST framework): outbound dialing, list/detail, hang-up, transfer."""
