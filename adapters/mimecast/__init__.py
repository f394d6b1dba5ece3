"""Mimecast (API 2.0): pull URL-click and attachment detections and the threat-intel feed;
push Managed URLs and blocked senders."""
