META
key;value
description;A round whose META leaves out num_projects and num_votes (pabutools needs neither)
country;Nowhere
unit;Test
instance;2026
budget;900
vote_type;approval
min_length;1
max_length;3
max_sum_cost;900
PROJECTS
project_id;cost;name
1;400;Library roof
2;350;Cycle racks
3;300;Pond clean-up
4;150;Street piano
VOTES
voter_id;vote
a;1,2
b;1,3
c;2,4
d;3
e;1,2,4
