META
key;value
description;An excerpt of a cumulative round: num_votes counts the full round, and one voter left a blank ballot with no points cell
country;Nowhere
unit;Test
instance;2026
num_projects;5
num_votes;2048
budget;60000
vote_type;cumulative
max_points;3
max_sum_points;6
PROJECTS
project_id;cost;name
1;25000;Community garden
2;12000;Repair cafe
3;30000;Skate park
4;8000;Reading corner
5;15000;Bus shelter
VOTES
voter_id;vote;points
100;1,2;3,3
101;3,1,4;3,2,1
102;2,5;2,2
103;2,4;1,1
104;4;3
105;3,5;3,3
106;1,2,3;2,2,2
107;5,4,2;3,2,1
108;
109;1;3
