"""The occurrences manager (docs/occurrences.md): every problem in the city, from citizens,
sensors, operators and other agencies, registered once, de-duplicated, routed to departments,
tracked against deadlines and closed with its history."""
