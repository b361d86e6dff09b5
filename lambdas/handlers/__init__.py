"""Thin Lambda entry points: parse the event, call one service, format the reply."""
