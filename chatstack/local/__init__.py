"""The local runtime behind `chatstack up`: gateway and queue emulators, embedded servers, identity."""
