META
key;value
description;Rows that stop before their last optional cells (age and sex of some voters, a project's name)
country;Nowhere
unit;Test
instance;2026
num_projects;4
num_votes;6
budget;500
vote_type;approval
PROJECTS
project_id;cost;name;category
p1;200;Play area;children
p2;150;Wildflower verge;environment
p3;250
p4;100;Notice board;public space
VOTES
voter_id;vote;age;sex
1;p1,p2;34;F
2;p2,p3
3;p3,p4;71;M
4;p1;29
5;p1,p3,p4;52;F
6;p2
